"""The side-by-side benchmark: hubget against huggingface_hub, hf_transfer, modelscope, aria2c and git-lfs,
on the same generated repos served by the same local server. Run it with ``python -m bench --help``."""
