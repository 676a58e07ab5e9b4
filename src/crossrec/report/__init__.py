"""Reports: tables (Markdown/CSV) and figures (PNG) from recorded results, never from live runs."""

from crossrec.report.figure2 import figure2
from crossrec.report.figures import figure1
from crossrec.report.tables import table1_rows, write_table1

__all__ = ["figure1", "figure2", "table1_rows", "write_table1"]
