"""The torch version of the fused LARS / momentum-SGD step, kept importable from here.

It lives in fastres.torch_ops, below fastres.ops, which picks it as the torch path of
`ops.fused_step` (ops knows no optimizer, so it cannot import from fastres.optim). This name
stays for the tests and user code that import it from its old home.
"""

from fastres.torch_ops import fused_step_torch

__all__ = ["fused_step_torch"]
