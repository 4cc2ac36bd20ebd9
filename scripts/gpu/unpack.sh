# Sourced by the scripts that run on the GPU machine: unpacks what scripts/gpu/prepare.sh put in .gpu/ (carried
# as ".gpu") into /tmp/torpor-gpu — the torpor binary (every time, so a new build is used) and nvCOMP (once) — and
# sets `torpor` and TORPOR_NVCOMP_PATH.
mkdir -p /tmp/torpor-gpu
xz -dc .gpu/torpor.xz > /tmp/torpor-gpu/torpor && chmod +x /tmp/torpor-gpu/torpor
[ -d /tmp/torpor-gpu/wheel ] || python3 -m zipfile -e .gpu/nvidia_libnvcomp_cu13-6.0.0.12-*.whl /tmp/torpor-gpu/wheel
export TORPOR_NVCOMP_PATH=/tmp/torpor-gpu/wheel/nvidia/libnvcomp/lib64
torpor=/tmp/torpor-gpu/torpor
