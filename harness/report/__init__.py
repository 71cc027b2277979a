"""HTML run report and trend page (Jinja2 + matplotlib), built from the records database."""

from harness.report.render import (render_run_report, render_trend_report, write_run_report,
                                   write_trend_report)

__all__ = ["render_run_report", "render_trend_report", "write_run_report", "write_trend_report"]
