"""The public API: names users import exist, are documented, and the key ones show an example."""

import importlib
import inspect

import pytest

PUBLIC = {
    "crossrec": ["CrossrecError", "ConfigError", "DataError", "BadRowError", "ArtifactError", "IntegrityError",
                 "DatasetNotFoundError", "FetchError"],
    "crossrec.data": ["Batch", "CTRData", "FeatureSchema", "SparseFeature", "load_cache", "save_cache",
                      "load_movielens", "fetch_movielens_100k"],
    "crossrec.data.synthetic": ["SyntheticConfig", "Teacher", "generate", "chunks", "write_cache"],
    "crossrec.data.criteo": ["CriteoConfig", "read_criteo", "prepare_criteo"],
    "crossrec.data.avazu": ["AvazuConfig", "read_avazu", "prepare_avazu"],
    "crossrec.data.sources": ["load_splits", "read_for_artifact", "DATASETS"],
    "crossrec.models": ["ModelSpec", "TableSpec", "CTRModel", "FusedEmbeddingBag", "build", "parameter_bytes"],
    "crossrec.train": ["TrainConfig", "train", "evaluate", "predict", "auc", "log_loss", "normalized_entropy",
                       "calibration", "compute", "Metrics"],
    "crossrec.artifact": ["save_artifact", "load_artifact", "verify", "Artifact"],
    "crossrec.compress": ["compress_", "select", "AccuracyBudget", "Selection", "EmbeddingQuantConfig",
                          "DenseQuantConfig", "PipelineConfig", "registered", "restore_", "StructuredPruneConfig",
                          "MagnitudePruneConfig", "SemiStructuredConfig", "EmbeddingRowPruneConfig", "DistillConfig",
                          "StudentSpec", "QATConfig", "auto_compress",
                          "choose_table_precisions", "TablePrecisionChoice"],
    "crossrec.models.quantized": ["QuantizedEmbeddingBag", "BF16Linear", "Int8DynamicLinear", "quantize_dense_",
                                  "quantize_embeddings_"],
    "crossrec.hardware": ["DeviceSpec", "load_catalog", "get_device", "detect", "profile", "profile_many",
                          "Profile", "estimate", "Estimate", "model_flops"],
    "crossrec.runtime": ["Runtime", "RUNTIMES", "load", "get_runtime", "BackendError", "export_onnx",
                         "export_blockers", "ScriptRuntime", "AutoRuntime"],
    "crossrec.cli": ["main"],
    "crossrec.serve": ["ServePlan", "DeploymentSpec", "ReplicaSpec", "BatchingConfig", "RoutingConfig",
                       "AdmissionConfig", "RoutingPolicy", "RequestInfo", "ReplicaState", "POLICIES", "get_policy",
                       "register_policy", "Batcher", "Router", "PredictResult", "LatencyFeedback", "ServeMetrics",
                       "Replica",
                       "InProcessReplica", "ProcessReplica", "build_replicas", "PartitionedReplica", "TransferStats",
                       "create_app", "serve", "running", "ServerHandle", "build_router", "loadgen", "aloadgen",
                       "LoadResult"],
    "crossrec.serve.codec": ["parse_json", "to_batch", "decode_npz", "encode_npz", "encode_response",
                             "negotiate", "encode_predictions", "decode_predictions", "answer_headers",
                             "instances_from_arrays", "check_header", "BodyError", "PredictRequest", "PredictResponse",
                             "Instance"],
    "crossrec.serve.ray_engine": ["deploy", "RayDeployment"],
    "crossrec.serve.eventloop": ["run", "loop_factory", "loop_name", "EVENT_LOOPS"],
    "crossrec.search": ["SearchSpace", "SearchConfig", "Strategy", "ParetoFront", "search", "run_search",
                        "front_member", "proxy_rank_correlation", "hypervolume_2d", "project_data", "SeedSpread",
                        "BaselineDominance", "baseline_dominance", "compress_candidate", "VerifyConfig", "Retimed",
                        "verify_front"],
    "crossrec.report": ["figure1", "figure2", "write_table1"],
    "crossrec.hardware.features": ["CompressionChoice", "features", "linear_layers", "dense_term"],
    "crossrec.hardware.collect": ["ProfileRecord", "collect", "random_specs", "read_records", "run_profile",
                                  "calibration_rows",
                                  "sample_choices", "spec_key"],
    "crossrec.hardware.predictor": ["LatencyPredictor", "LatencyPrediction", "model_key", "evaluate_predictor",
                                    "split_by_spec", "synthetic_record", "nnls"],
}
# Verbs and classes whose docstring must carry a runnable example (DESIGN.md §4).
WITH_EXAMPLE = ["crossrec.data.Batch", "crossrec.data.CTRData", "crossrec.data.synthetic.generate",
                "crossrec.models.ModelSpec", "crossrec.models.CTRModel", "crossrec.models.FusedEmbeddingBag",
                "crossrec.train.train", "crossrec.train.auc", "crossrec.artifact.save_artifact",
                "crossrec.data.criteo.read_criteo", "crossrec.data.sources.load_splits",
                "crossrec.compress.compress_", "crossrec.compress.select", "crossrec.compress.PipelineConfig",
                "crossrec.compress.StructuredPruneConfig", "crossrec.compress.DistillConfig",
                "crossrec.compress.QATConfig", "crossrec.compress.auto_compress",
                "crossrec.compress.choose_table_precisions", "crossrec.runtime.load",
                "crossrec.runtime.export_onnx",
                "crossrec.hardware.estimate", "crossrec.hardware.load_catalog", "crossrec.hardware.profile_many",
                "crossrec.models.static_int8.Int8StaticMLP", "crossrec.models.static_int8.quantize_mlps_static_",
                "crossrec.serve.plan.ServePlan", "crossrec.serve.router.Router", "crossrec.serve.batcher.Batcher",
                "crossrec.serve.batcher.merge_batches", "crossrec.serve.policy.get_policy",
                "crossrec.serve.policy.RoutingPolicy", "crossrec.serve.policy.register_policy",
                "crossrec.serve.metrics.ServeMetrics", "crossrec.serve.codec.parse_json",
                "crossrec.serve.codec.decode_npz", "crossrec.serve.app.create_app",
                "crossrec.serve.codec.decode_predictions", "crossrec.serve.codec.negotiate",
                "crossrec.serve.app.ServingApp", "crossrec.runtime.ScriptRuntime", "crossrec.serve.server.running",
                "crossrec.serve.loadgen.loadgen", "crossrec.search.SearchSpace", "crossrec.search.SearchConfig",
                "crossrec.search.search", "crossrec.search.ParetoFront", "crossrec.search.proxy_rank_correlation",
                "crossrec.search.hypervolume_2d", "crossrec.search.choose", "crossrec.report.figure2.figure2",
                "crossrec.hardware.features.CompressionChoice", "crossrec.hardware.features.features",
                "crossrec.hardware.collect.collect", "crossrec.hardware.collect.random_specs",
                "crossrec.hardware.predictor.LatencyPredictor", "crossrec.hardware.predictor.evaluate_predictor"]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist_and_are_documented(module):
    mod = importlib.import_module(module)
    assert mod.__doc__, f"{module} has no module docstring"
    for name in PUBLIC[module]:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module}.{name} has no docstring"


@pytest.mark.parametrize("dotted", WITH_EXAMPLE)
def test_key_api_has_an_example(dotted):
    module, name = dotted.rsplit(".", 1)
    assert ">>>" in inspect.getdoc(getattr(importlib.import_module(module), name)), f"{dotted} needs an example"
