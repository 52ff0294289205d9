"""lm-evaluation-harness task configs of r2sft (pass this folder to --include_path)."""
