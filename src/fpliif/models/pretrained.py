"""Weight files shipped inside the package, by name."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"
DEFAULT_NAME = "fpliif-celebamask-mini"


def weights_registry() -> dict[str, Path]:
    """Names of bundled weight files -> paths (only files that exist)."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def default_weights_path() -> Path | None:
    """Path of the bundled default weights, or None if the package ships none."""
    return weights_registry().get(DEFAULT_NAME)


def resolve_weights(name_or_path: str | Path | None) -> Path:
    """A bundled weights name, a file path, or None (the default) -> existing file path."""
    if name_or_path is None:
        path = default_weights_path()
        if path is None:
            raise FileNotFoundError(
                f"no bundled default weights ({DEFAULT_NAME}.safetensors) in {WEIGHTS_DIR}; "
                "pass --weights FILE (a .safetensors file written by fpliif)"
            )
        return path
    reg = weights_registry()
    if str(name_or_path) in reg:
        return reg[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {str(name_or_path)!r}: no such file and no bundled weights of that name "
            f"(bundled: {sorted(reg) or 'none'})"
        )
    return path
