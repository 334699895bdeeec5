"""File input/output: videos, result files, mesh exports."""
