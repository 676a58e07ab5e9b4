"""Hardware: the device catalog (data), local detection, measured profiles and modeled estimates.

- :mod:`~crossrec.hardware.spec` (layer 1): :class:`DeviceSpec`, :func:`load_catalog`, :func:`get_device`.
- :mod:`~crossrec.hardware.detect`: :func:`detect` the local CPU and CUDA GPUs, mapped to the catalog.
- :mod:`~crossrec.hardware.profile`: :func:`profile` / :func:`profile_many` — ``source="measured"``.
- :mod:`~crossrec.hardware.estimate`: :func:`estimate` (roofline), :func:`model_flops` — ``source="modeled"``.
- :mod:`~crossrec.hardware.features` / :mod:`~crossrec.hardware.collect` / :mod:`~crossrec.hardware.predictor`:
  :class:`CompressionChoice`, profile datasets (``crossrec profile``) and the :class:`LatencyPredictor`
  (``source="predicted"``, or ``"modeled"`` where it falls back to the roofline).

Importing this package loads neither torch nor the models package (they are imported where
used), so a layer-1/2 module may import ``crossrec.hardware.spec`` without a cycle.

>>> from crossrec.hardware import estimate, get_device
>>> get_device("tpu-v4").peak("bf16")
275.0
"""

from crossrec.hardware.collect import ProfileRecord, collect, random_specs, read_records, run_profile
from crossrec.hardware.detect import DetectedDevice, detect, detect_cpu, detect_cuda, match_catalog
from crossrec.hardware.estimate import Estimate, StageEstimate, dense_stages, estimate, model_flops, row_bytes
from crossrec.hardware.features import CompressionChoice, features
from crossrec.hardware.predictor import LatencyPrediction, LatencyPredictor, evaluate_predictor, split_by_spec
from crossrec.hardware.profile import BatchProfile, Profile, percentile, profile, profile_many
from crossrec.hardware.spec import (
    EMBEDDING_PRECISIONS,
    KINDS,
    PRECISIONS,
    DeviceSpec,
    default_catalog_path,
    get_device,
    load_catalog,
)

__all__ = ["EMBEDDING_PRECISIONS", "KINDS", "PRECISIONS", "BatchProfile", "CompressionChoice", "DetectedDevice",
           "DeviceSpec", "Estimate", "LatencyPrediction", "LatencyPredictor", "Profile", "ProfileRecord",
           "StageEstimate", "collect", "default_catalog_path", "dense_stages", "detect", "detect_cpu", "detect_cuda",
           "estimate", "evaluate_predictor", "features", "get_device", "load_catalog", "match_catalog", "model_flops",
           "percentile", "profile", "profile_many", "random_specs", "read_records", "row_bytes", "run_profile",
           "split_by_spec"]
