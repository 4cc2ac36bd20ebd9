# Shell helpers the scripts share. Source it from a script that has done `cd` to the repository root:
#     source scripts/lib.sh

# apt_install WHO PACKAGE...: installs the Debian packages among PACKAGE that are missing, as root or through sudo.
# Another apt or dpkg holding the package lock (unattended-upgrades on a fresh cloud VM) is waited for, with a
# message, for at most TORPOR_APT_WAIT seconds (default 600); then apt's own error says what holds it. WHO names
# the calling script in messages.
apt_install() {
    local who=$1 package
    shift
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    local sudo_cmd=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "$who: need root or sudo to install ${missing[*]}" >&2; return 1; }
        sudo_cmd=(sudo)
    fi
    local wait=${TORPOR_APT_WAIT:-600} holder
    holder=$(for name in apt apt-get dpkg unattended-upgr; do pgrep -a -x "$name"; done | head -n 1 || true)
    if [ -n "$holder" ]; then
        echo "$who: another package manager is running ($holder); waiting up to $wait s for it to finish" >&2
    fi
    echo "$who: installing ${missing[*]}" >&2
    local options=(-o "DPkg::Lock::Timeout=$wait")
    "${sudo_cmd[@]}" apt-get "${options[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get "${options[@]}" install -y -qq "${missing[@]}" >/dev/null
}
