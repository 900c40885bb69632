# Sourced by the scripts: puts nvcc on PATH when the CUDA toolkit is at /usr/local/cuda.
if [[ -x /usr/local/cuda/bin/nvcc && ":$PATH:" != *":/usr/local/cuda/bin:"* ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
