#!/bin/sh
# supermin first-boot runner (DESIGN.md §7), installed as /usr/lib/supermin/firstboot/run.
#
# Runs the package scripts supermin stored in the appliance, once, in the order
# of the manifest (one tab-separated line per step: step, package, version,
# phase, interpreter, shell-quoted arguments, script path relative to the
# manifest), with the interpreter and arguments the package manager would use.
# Each step's name, output and exit status go to the log; a failing step is
# reported and the next one runs anyway. Completion is marked so that the next
# boot does nothing; an interrupted run resumes after the last finished step.
#
# POSIX sh only: the appliance may have dash, bash or busybox sh. The paths may
# be overridden (SUPERMIN_FIRSTBOOT_DIR, _LOG, _STATE) to test it outside a guest.

dir=${SUPERMIN_FIRSTBOOT_DIR:-/usr/lib/supermin/firstboot}
log=${SUPERMIN_FIRSTBOOT_LOG:-/var/log/supermin-firstboot.log}
state=${SUPERMIN_FIRSTBOOT_STATE:-/var/lib/supermin}
done_mark=$state/firstboot.done
progress=$state/firstboot.progress

say() { printf 'supermin-firstboot: %s\n' "$*"; }
note() { printf '%s\n' "$*" >>"$log"; }

[ -e "$done_mark" ] && exit 0
if [ ! -r "$dir/manifest" ]; then
    say "no $dir/manifest: nothing to run"
    exit 0
fi

if [ ! -c /dev/null ]; then
    # Scripts would create it as a plain file and write into it; nothing has run yet.
    say "no /dev/null: mount /dev (devtmpfs) first; package scripts not run"
    exit 1
fi

# What a maintainer script may assume; the manifest carries everything else.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
HOME=${HOME:-/root}
[ "$HOME" = / ] && HOME=/root
DEBIAN_FRONTEND=noninteractive
export PATH HOME DEBIAN_FRONTEND
umask 022

[ -d "${log%/*}" ] || mkdir -p "${log%/*}"
[ -d "$state" ] || mkdir -p "$state"
if ! : >>"$log"; then
    # Without a log and a completion mark every boot would run the scripts again.
    say "cannot write $log: package scripts not run"
    exit 1
fi

at_uptime() {
    up=
    [ -r /proc/uptime ] && read -r up _ </proc/uptime
    printf '%s' "${up:+ at ${up}s}"
}

last=0
if [ -r "$progress" ]; then
    while read -r number; do
        case $number in '' | *[!0-9]*) ;; *) last=$number ;; esac
    done <"$progress"
    note "== resuming after step $last$(at_uptime)"
fi

tab=$(printf '\t')
ran=0
skipped=0
failures=0
failed=

field() { # the text before the first tab of $rest; $rest keeps what follows it
    value=${rest%%"$tab"*}
    rest=${rest#*"$tab"}
}

run_step() {
    if [ "$interpreter" = "<lua>" ]; then
        note "== step $step: $package $version $phase: skipped: needs rpm's Lua"
        skipped=$((skipped + 1))
        return
    fi
    eval "set -- $arguments" # written by supermin with shlex.quote
    # A body or arguments make a script run by its interpreter; neither means the
    # interpreter is the whole program (rpm's `%post -p /sbin/ldconfig`). No
    # script at all: a program with its own arguments (`dpkg --configure -a`).
    command=$interpreter
    if [ -z "$script" ]; then
        command="$command${arguments:+ $arguments}"
    elif [ -s "$dir/$script" ] || [ $# -gt 0 ]; then
        set -- "$dir/$script" "$@"
        command="$command $script${arguments:+ $arguments}"
    fi
    note "== step $step: $package $version $phase ($command)$(at_uptime)"
    set -f # the interpreter is split into words ("/bin/sh -e") but never globbed
    if [ -z "$script" ]; then
        # shellcheck disable=SC2086
        ${interpreter} "$@" </dev/null >>"$log" 2>&1
    else
        # shellcheck disable=SC2086
        DPKG_MAINTSCRIPT_PACKAGE=$package DPKG_MAINTSCRIPT_NAME=$phase \
            ${interpreter:-/bin/sh} "$@" </dev/null >>"$log" 2>&1
    fi
    status=$?
    set +f
    ran=$((ran + 1))
    if [ "$status" -eq 0 ]; then
        note "== step $step: status 0"
    else
        note "== step $step: status $status (failed)"
        say "step $step, $package $phase, failed with status $status"
        failures=$((failures + 1))
        failed="$failed $step"
    fi
}

while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    rest=$line
    # read(1) would merge empty fields, as tab is IFS white space: split by hand.
    field; step=$value
    field; package=$value
    field; version=$value
    field; phase=$value
    field; interpreter=$value
    field; arguments=$value
    script=$rest
    case $step in
        '' | *[!0-9]*)
            note "== bad manifest line: $line"
            failures=$((failures + 1))
            continue
            ;;
    esac
    [ "$step" -le "$last" ] && continue
    run_step
    echo "$step" >>"$progress"
done <"$dir/manifest"

summary="$ran scripts run, $failures failed${failed:+ (step$failed)}, $skipped skipped"
note "== finished: $summary$(at_uptime)"
say "$summary; log in $log"
if printf '%s\n' "$summary" >"$done_mark"; then
    rm -f "$progress" 2>/dev/null
else
    say "cannot write $done_mark: the next boot will run the remaining steps again"
fi
[ "$failures" -eq 0 ]
