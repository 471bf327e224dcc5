"""Policies and the controller stay pure: importing them pulls in no ray/grpc/torch/vllm."""

import subprocess
import sys


def test_pure_layers_import_no_heavy_backends():
    code = (
        "import sys, relay_ray.policies, relay_ray.controller, relay_ray.state, relay_ray.types;"
        "print(' '.join(sorted({'ray','grpc','torch','vllm'} & {m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure layers imported: {out.stdout.strip()}"
