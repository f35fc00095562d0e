"""`device=auto|cpu|cuda|cuda:N|mps` -> a torch.device that exists, or a clear error."""

from __future__ import annotations

import torch

from dlrun.errors import DlrunError


def resolve(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DlrunError("device=mps: Apple's MPS is not available here; use device=cpu")
        return torch.device("mps")
    # cuda or cuda:N
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU found"
        raise DlrunError(
            f"device={spec}: CUDA is not available on this machine ({why}); "
            "use device=cpu or device=auto"
        )
    index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DlrunError(
            f"device={spec}: no such GPU, this machine has {count} (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
