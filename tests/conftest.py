"""Suite-wide setup, imported before any test module.

Without CUDA, Triton kernels run in the interpreter on CPU tensors. Triton reads
TRITON_INTERPRET when a kernel is defined (at import), so it is set here, before the first test
module imports llm_core: the suite then passes in any order (a kernel module imported first by a
test that does not set it would otherwise stay compiled-mode for the rest of the run).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
