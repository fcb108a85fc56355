"""The paper's analyses (Tables V and VII, Figs. 3-5) and the label audit."""

from .audit import audit_predictions, write_audit
from .review_page import write_review_page
from .tables import agreement_accuracy_table, agreement_distribution_table, format_markdown_table

__all__ = ["agreement_distribution_table", "agreement_accuracy_table", "format_markdown_table", "audit_predictions",
           "write_audit", "write_review_page"]
