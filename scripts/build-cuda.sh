#!/usr/bin/env bash
# Builds `triage` with `--features cuda` on a machine that has no NVIDIA driver or CUDA toolkit
# (how the GPU figures in training/README.md were made: built on the 2-core CPU machine, run on
# a GPU machine that has the driver and CUDA 13 libraries). On a machine with CUDA installed,
# `cargo build --release --features cuda` is all it takes.
#
# It installs NVIDIA's CUDA 13.0 compiler, headers and libraries from PyPI into target/cuda-pip,
# lays them out as a CUDA_HOME, and links against a stub libcuda.so (the real one comes with the
# driver on the GPU machine). CUDA_COMPUTE_CAP picks the GPU generation (90: H100/H200).
# Prints the path of the binary (target/cuda/release/triage).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/target/cuda-root
pip_dir=$PWD/target/cuda-pip
cap=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$root/bin/nvcc" ]; then
    python3 -m pip install -q --target "$pip_dir" "nvidia-cuda-nvcc==13.0.*" \
        "nvidia-cuda-runtime==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand" \
        "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
        "nvidia-cuda-cccl==13.0.*" >&2
    cuda=$pip_dir/nvidia/cu13
    rm -rf "$root" && mkdir -p "$root/lib64"
    ln -s "$cuda/bin" "$root/bin"
    ln -s "$cuda/include" "$root/include"
    ln -s "$cuda/nvvm" "$root/nvvm"
    for lib in "$cuda"/lib/*.so.*; do
        name=$(basename "$lib")
        ln -sf "$lib" "$root/lib64/$name"
        ln -sf "$lib" "$root/lib64/${name%%.so.*}.so"
    done
    # A stub driver library with every cu* entry point of cuda.h, for the linker only.
    gcc -E -I"$cuda/include" "$cuda/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' |
        sed 's/\s*(//' | sort -u | awk '{print "void " $1 "(void) {}"}' > "$root/cuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/libcuda.so" "$root/cuda-stub.c"
fi

export CUDA_HOME=$root CUDA_PATH=$root PATH=$root/bin:$PATH CUDA_COMPUTE_CAP=$cap
export LIBRARY_PATH=$root/lib64
# No debug info, stripped: 78 MB instead of several hundred, 12 MB with xz to carry elsewhere.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true
cargo build --release --features cuda --bin triage --target-dir target/cuda >&2
echo "$PWD/target/cuda/release/triage"
