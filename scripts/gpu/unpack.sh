# Sourced by the scripts that run on the GPU machine: unpacks what scripts/gpu/prepare.sh put in .gpu/ (carried
# as ".gpu", or file by file) into /tmp/torpor-gpu — the torpor binary and libtorpor (every time they came, so a
# new build is used) and nvCOMP (once: a call that carried its wheel earlier left it there) — and sets `torpor`,
# TORPOR_NVCOMP_PATH and, with libtorpor, TORPOR_LIBRARY.
mkdir -p /tmp/torpor-gpu
[ -f .gpu/torpor.xz ] && xz -dc .gpu/torpor.xz > /tmp/torpor-gpu/torpor && chmod +x /tmp/torpor-gpu/torpor
[ -f .gpu/libtorpor.so.xz ] && xz -dc .gpu/libtorpor.so.xz > /tmp/torpor-gpu/libtorpor.so
if [ ! -d /tmp/torpor-gpu/wheel ] && ls .gpu/nvidia_libnvcomp_cu13-6.0.0.12-*.whl >/dev/null 2>&1; then
    python3 -m zipfile -e .gpu/nvidia_libnvcomp_cu13-6.0.0.12-*.whl /tmp/torpor-gpu/wheel
fi
export TORPOR_NVCOMP_PATH=/tmp/torpor-gpu/wheel/nvidia/libnvcomp/lib64
[ -f /tmp/torpor-gpu/libtorpor.so ] && export TORPOR_LIBRARY=/tmp/torpor-gpu/libtorpor.so
torpor=/tmp/torpor-gpu/torpor
