"""The built-in Hugging Face -> ModelScope id table, seeded from public facts.

Sources: the model cards of the publishers (ChatGLM3's card links ``THUDM/chatglm3-6b`` on HF to
``ZhipuAI/chatglm3-6b`` on ModelScope), LLaMA-Factory's download sources
(``src/llamafactory/extras/constants.py``, ``DownloadSource.MODELSCOPE``) and ms-swift's model
registry (``Model(ms_id, hf_id)``). Public tables are not always right (one of them swaps two Gemma
ids), so an entry here only names a *candidate*: when the Hugging Face listing can be read, hubget
accepts the candidate only if the sha256 of every weight file matches; when it cannot, hubget says
plainly that it substitutes on the table's word alone.
"""

from __future__ import annotations

# Whole organisations that publish under another name on ModelScope (every model seen in the public
# tables for these organisations follows the rule). A model pair below wins over its organisation.
ORG_RENAMES: dict[str, str] = {
    "internlm": "Shanghai_AI_Laboratory",
    "THUDM": "ZhipuAI",
    "openbmb": "OpenBMB",
    "Qwen": "Qwen",
    "deepseek-ai": "deepseek-ai",
    "meta-llama": "LLM-Research",
}

# Known model pairs (HF id -> ModelScope id) where the ModelScope owner is not the organisation rule
# above, or where the pair is a common target worth pinning.
MODEL_PAIRS: dict[str, str] = {
    "internlm/internlm2-chat-7b": "Shanghai_AI_Laboratory/internlm2-chat-7b",
    "internlm/internlm2-chat-20b": "Shanghai_AI_Laboratory/internlm2-chat-20b",
    "internlm/internlm2_5-7b-chat": "Shanghai_AI_Laboratory/internlm2_5-7b-chat",
    "internlm/internlm3-8b-instruct": "Shanghai_AI_Laboratory/internlm3-8b-instruct",
    "THUDM/chatglm2-6b": "ZhipuAI/chatglm2-6b",
    "THUDM/chatglm3-6b": "ZhipuAI/chatglm3-6b",
    "THUDM/chatglm3-6b-base": "ZhipuAI/chatglm3-6b-base",
    "THUDM/glm-4-9b": "ZhipuAI/glm-4-9b",
    "THUDM/glm-4-9b-chat": "ZhipuAI/glm-4-9b-chat",
    "THUDM/codegeex4-all-9b": "ZhipuAI/codegeex4-all-9b",
    "meta-llama/Meta-Llama-3-8B": "LLM-Research/Meta-Llama-3-8B",
    "meta-llama/Meta-Llama-3-8B-Instruct": "LLM-Research/Meta-Llama-3-8B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct": "LLM-Research/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct": "LLM-Research/Llama-3.3-70B-Instruct",
    "meta-llama/Llama-2-7b-hf": "modelscope/Llama-2-7b-ms",
    "meta-llama/Llama-2-7b-chat-hf": "modelscope/Llama-2-7b-chat-ms",
    "meta-llama/Llama-2-13b-hf": "modelscope/Llama-2-13b-ms",
    "meta-llama/Llama-2-13b-chat-hf": "modelscope/Llama-2-13b-chat-ms",
    "meta-llama/Llama-2-70b-hf": "modelscope/Llama-2-70b-ms",
    "meta-llama/Llama-2-70b-chat-hf": "modelscope/Llama-2-70b-chat-ms",
    "mistralai/Mistral-7B-v0.1": "AI-ModelScope/Mistral-7B-v0.1",
    "mistralai/Mistral-7B-Instruct-v0.1": "AI-ModelScope/Mistral-7B-Instruct-v0.1",
    "mistralai/Mistral-7B-Instruct-v0.2": "AI-ModelScope/Mistral-7B-Instruct-v0.2",
    "mistralai/Mistral-7B-Instruct-v0.3": "LLM-Research/Mistral-7B-Instruct-v0.3",
    "mistralai/Mixtral-8x7B-v0.1": "AI-ModelScope/Mixtral-8x7B-v0.1",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "AI-ModelScope/Mixtral-8x7B-Instruct-v0.1",
    "google/gemma-2-2b-it": "LLM-Research/gemma-2-2b-it",
    "google/gemma-2-9b-it": "LLM-Research/gemma-2-9b-it",
    "google/gemma-2-27b-it": "LLM-Research/gemma-2-27b-it",
    "microsoft/phi-2": "AI-ModelScope/phi-2",
    "microsoft/Phi-3-mini-4k-instruct": "LLM-Research/Phi-3-mini-4k-instruct",
    "microsoft/Phi-3-mini-128k-instruct": "LLM-Research/Phi-3-mini-128k-instruct",
    "openai-community/gpt2": "AI-ModelScope/gpt2",
    "openai-community/gpt2-medium": "AI-ModelScope/gpt2-medium",
    "openai-community/gpt2-large": "AI-ModelScope/gpt2-large",
    "tiiuae/falcon-7b": "AI-ModelScope/falcon-7b",
    "tiiuae/falcon-7b-instruct": "AI-ModelScope/falcon-7b-instruct",
    "databricks/dbrx-instruct": "AI-ModelScope/dbrx-instruct",
    "CohereForAI/c4ai-command-r-v01": "AI-ModelScope/c4ai-command-r-v01",
    "openbmb/MiniCPM-2B-sft-bf16": "OpenBMB/miniCPM-bf16",
    "openbmb/MiniCPM3-4B": "OpenBMB/MiniCPM3-4B",
    "openbmb/MiniCPM-V-2_6": "OpenBMB/MiniCPM-V-2_6",
    "llava-hf/llava-1.5-7b-hf": "swift/llava-1.5-7b-hf",
    "llava-hf/llava-1.5-13b-hf": "swift/llava-1.5-13b-hf",
    "deepseek-ai/DeepSeek-R1": "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
}
