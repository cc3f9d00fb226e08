"""LEARN: knowledge adaptation from a frozen LLM to sequential recommendation (Jia et al., AAAI 2025)."""

__version__ = "0.1.0"
