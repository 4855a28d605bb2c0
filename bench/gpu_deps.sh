#!/usr/bin/env bash
# Run here (where apt can download), before a GPU session: fetches the .deb files of GoogleTest and
# Google Benchmark into .gpu_deps/ (git-ignored, ~0.4 MB), which the GPU image lacks. Name .gpu_deps
# in the device run's `carry`; bench/gpu_run.sh then unpacks them and also builds and runs dotf's C++
# tests and microbenchmarks (the CUDA cases of dotf_bench).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .gpu_deps
cd .gpu_deps
apt-get download libbenchmark-dev libbenchmark1debian libgtest-dev
ls -l
