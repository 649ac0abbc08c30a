#!/bin/sh
# supermin first-boot runner (DESIGN.md §7), installed as /usr/lib/supermin/firstboot/run.
#
# Runs the package scripts supermin stored in the appliance, once, in the order
# of the manifest (one tab-separated line per step: step, package, version,
# phase, interpreter, shell-quoted arguments, script path relative to the
# manifest), with the interpreter and arguments the package manager would use.
# Each step's name, output and exit status go to the log; a failing step is
# reported and the next one runs anyway. Then the files listed in `owners` get
# the users and groups those scripts created. Completion is marked so that the
# next boot does nothing; an interrupted run resumes after the last finished step.
#
# POSIX sh only: the appliance may have dash, bash or busybox sh. The paths may
# be overridden (SUPERMIN_FIRSTBOOT_DIR, _LOG, _STATE, _ETC) to test it outside a guest.

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

# Owners whose names no /etc/passwd or /etc/group of the build defined (DESIGN.md
# §4), set now that the scripts creating those users have run. One line each:
# user, group (empty: the build set it), a mode to set again since chown clears
# setuid/setgid, then the path. The names are looked up here so that chown gets
# numbers: busybox's splits a name at a dot. Setting them again is harmless, so
# an interrupted run simply does them all again; the completion mark ends it.
etc=${SUPERMIN_FIRSTBOOT_ETC:-/etc}
owners_set=0
owner_failures=0

tool() { # NAME: NAME, or busybox's applet when only busybox has it
    if command -v "$1" >/dev/null 2>&1; then
        printf '%s' "$1"
    elif command -v busybox >/dev/null 2>&1; then
        printf 'busybox %s' "$1"
    fi
}

id_of() { # NAME FILE: the number of NAME's first line in FILE (passwd(5) or group(5))
    [ -r "$2" ] || return 1
    while IFS=: read -r id_name _ id_number _; do
        if [ "$id_name" = "$1" ]; then
            case $id_number in '' | *[!0-9]*) return 1 ;; esac
            printf '%s' "$id_number"
            return 0
        fi
    done <"$2"
    return 1
}

set_owner() {
    if [ ! -e "$path" ] && [ ! -L "$path" ]; then
        note "== owner of $path: gone, nothing to set"
        return
    fi
    spec=
    if [ -n "$user" ]; then
        if uid=$(id_of "$user" "$etc/passwd"); then
            spec=$uid
        else
            note "== owner of $path: user $user still unknown (failed)"
            owner_failures=$((owner_failures + 1))
            user=
        fi
    fi
    if [ -n "$group" ]; then
        if gid=$(id_of "$group" "$etc/group"); then
            spec="$spec:$gid"
        else
            note "== owner of $path: group $group still unknown (failed)"
            owner_failures=$((owner_failures + 1))
            group=
        fi
    fi
    [ -n "$spec" ] || return
    # shellcheck disable=SC2086 # "$chown" may be "busybox chown"
    if $chown -h "$spec" "$path" >>"$log" 2>&1 &&
        { [ -z "$mode" ] || $chmod "$mode" "$path" >>"$log" 2>&1; }; then
        note "== owner of $path: ${user:-(kept)}:${group:-(kept)} ($spec${mode:+, mode $mode})"
        owners_set=$((owners_set + 1))
    else
        note "== owner of $path: chown $spec failed"
        owner_failures=$((owner_failures + 1))
    fi
}

if [ -r "$dir/owners" ]; then
    chown=$(tool chown)
    chmod=$(tool chmod)
    if [ -z "$chown" ] || [ -z "$chmod" ]; then
        note "== owners: no chown or chmod (coreutils or busybox): file owners not set"
        owner_failures=$((owner_failures + 1))
    else
        while IFS= read -r line || [ -n "$line" ]; do
            case $line in '' | '#'*) continue ;; esac
            rest=$line
            field; user=$value
            field; group=$value
            field; mode=$value
            path=$rest
            set_owner
        done <"$dir/owners"
    fi
fi

summary="$ran scripts run, $failures failed${failed:+ (step$failed)}, $skipped skipped"
if [ -r "$dir/owners" ]; then
    summary="$summary; owners: $owners_set set, $owner_failures failed"
fi
note "== finished: $summary$(at_uptime)"
say "$summary; log in $log"
if printf '%s\n' "$summary" >"$done_mark"; then
    rm -f "$progress" 2>/dev/null
else
    say "cannot write $done_mark: the next boot will run the remaining steps again"
fi
[ "$failures" -eq 0 ] && [ "$owner_failures" -eq 0 ]
