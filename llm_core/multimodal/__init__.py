"""Media prompts of multimodal checkpoints (LLaVA, Qwen2-Audio): processing, encoding, placement."""

from llm_core.multimodal.embedder import MultiModalEmbedder
from llm_core.multimodal.inputs import MultiModalInput, MultiModalPrompt
from llm_core.multimodal.loader import MultiModal, load_multimodal
from llm_core.multimodal.processor import MultiModalProcessor

__all__ = ["MultiModal", "MultiModalEmbedder", "MultiModalInput", "MultiModalPrompt", "MultiModalProcessor",
           "load_multimodal"]
