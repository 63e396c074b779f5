"""flashbeam: long-context LLM batch jobs on Apache Beam with an embedded V4-Flash engine."""

__version__ = "0.1.0"
