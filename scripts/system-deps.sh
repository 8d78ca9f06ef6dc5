#!/usr/bin/env bash
# Make sure the Debian packages a make target needs are installed (list: system-packages.txt).
#
#   scripts/system-deps.sh TARGET           install what is missing (root with apt-get), else stop
#   scripts/system-deps.sh --check TARGET   only report: exit 2 with the command if anything is missing
#
# Presence is judged by the file or command each package provides, not by dpkg, so a server built
# from source or a binary installed another way counts too. Exit codes: 0 all present (or now
# installed), 2 something is missing and was not installed, 64 bad usage or a bad package list.
# CLUSTERSYNC_SYSTEM_PACKAGES names another list (the tests use it).
set -uo pipefail

# Only bash builtins before apt-get runs: the tests call this with a PATH that holds nothing else.
here="${BASH_SOURCE[0]%/*}"
[[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.
list="${CLUSTERSYNC_SYSTEM_PACKAGES:-$here/system-packages.txt}"

say() { printf 'system-deps: %s\n' "$*" >&2; }

check_only=0
if [[ "${1:-}" == "--check" ]]; then
    check_only=1
    shift
fi
if [[ $# -ne 1 || -z "$1" ]]; then
    say "usage: $0 [--check] TARGET   (TARGET is a make target such as demo or test)"
    exit 64
fi
target="$1"

if [[ ! -r "$list" ]]; then
    say "cannot read the package list $list"
    exit 64
fi

present() {  # a path must exist and be executable; a bare name must be a command on PATH
    if [[ "$1" == /* ]]; then [[ -x "$1" ]]; else command -v "$1" >/dev/null 2>&1; fi
}

# Fills the global array `missing` with the packages of $target whose probe fails.
find_missing() {
    missing=()
    local line_no=0 package targets probe
    while IFS= read -r line || [[ -n "$line" ]]; do
        line_no=$((line_no + 1))
        line="${line%%#*}"
        [[ -z "${line//[[:space:]]/}" ]] && continue
        # Columns: the package, the make targets that need it (one or more), the probe last.
        read -r -a words <<<"$line"
        if [[ ${#words[@]} -lt 3 ]]; then
            say "$list:$line_no: expected 'package target... probe', got: $line"
            exit 64
        fi
        package="${words[0]}"
        probe="${words[${#words[@]}-1]}"
        targets=" ${words[*]:1:${#words[@]}-2} "
        [[ "$targets" == *" $target "* ]] || continue
        present "$probe" || missing+=("$package")
    done <"$list"
}

find_missing
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [[ $check_only -eq 1 || $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "\`make $target\` needs these Debian packages, which are missing: ${missing[*]}"
    if [[ $check_only -eq 0 && $EUID -ne 0 ]]; then
        say "not root, so not installing them; run:"
        printf '  sudo apt-get update && sudo %s\n' "${install[*]}" >&2
    else
        [[ $check_only -eq 0 ]] && say "apt-get is not available here, so not installing them; on Debian run as root:"
        [[ $check_only -eq 1 ]] && say "install them as root with:"
        printf '  apt-get update && %s\n' "${install[*]}" >&2
    fi
    exit 2
fi

# Root with apt-get: one update, one install, each printed before it runs.
export DEBIAN_FRONTEND=noninteractive
wanted=("${missing[@]}")
run() {
    printf '+ %s\n' "$*" >&2
    if ! "$@"; then
        say "'$*' failed; fix the cause above and rerun \`make $target\`"
        exit 2
    fi
}
run apt-get update
run "${install[@]}"

find_missing
if [[ ${#missing[@]} -ne 0 ]]; then
    say "still missing after the install: ${missing[*]} (the package did not provide what the list expects)"
    exit 2
fi
say "installed: ${wanted[*]}"
