#!/bin/busybox sh
# shellcheck shell=dash
# supermin mini-initrd /init for the ext2 format (DESIGN.md §6-7).
#
# Loads the modules in /lib/modules/load (dependencies first), waits for the
# root= device of the kernel command line (/dev/NAME or UUID=...) with a
# bounded, growing back-off, mounts it on /newroot and switch_roots to the
# root's /init (or /sbin/init, or init=). The root's /init, written by supermin
# like the initrd format's, mounts /proc, /sys and /dev there and runs the
# first-boot package scripts before the appliance's own init.
#
# Everything runs through the static /bin/busybox in this initrd. On failure
# the script exits: the kernel panics, and panic=N reboots (or halts qemu).

bb=/bin/busybox
say() { $bb printf 'supermin-mini-initrd: %s\n' "$*"; }
fail() {
    say "$*"
    exit 1
}

$bb mount -t proc -o nosuid,nodev,noexec proc /proc
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
$bb mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || say "cannot mount devtmpfs on /dev"

root=
fstype=
flags=
mode=rw
init=
wait_limit=30 # seconds, rootwait's bound; rootdelay=N changes it
# shellcheck disable=SC2013 # words, not lines
for word in $($bb cat /proc/cmdline); do
    case $word in
        root=*) root=${word#root=} ;;
        rootfstype=*) fstype=${word#rootfstype=} ;;
        rootflags=*) flags=${word#rootflags=} ;;
        rootdelay=*) wait_limit=${word#rootdelay=} ;;
        init=*) init=${word#init=} ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
    esac
done
case $wait_limit in '' | *[!0-9]*) wait_limit=30 ;; esac

loaded=0
while read -r module; do
    [ -n "$module" ] || continue
    # Already there (built in, or pulled by another) is fine; anything else is said.
    if out=$($bb insmod "/lib/modules/$module" 2>&1); then
        loaded=$((loaded + 1))
    else
        case $out in *"File exists"*) ;; *) say "insmod $module: $out" ;; esac
    fi
done </lib/modules/load
say "$loaded modules loaded"

[ -n "$root" ] || fail "no root= on the kernel command line (root=/dev/vda or root=UUID=...)"

resolve() { # the device node root= names, once it exists
    case $root in
        UUID=* | LABEL=*) $bb findfs "$root" 2>/dev/null ;;
        /dev/*) [ -b "$root" ] && echo "$root" ;;
        *) [ -b "/dev/$root" ] && echo "/dev/$root" ;;
    esac
}

# Back-off: 10 ms doubling to at most 1 s a step, until wait_limit seconds passed.
delay=10000
waited=0
limit=$((wait_limit * 1000000))
until device=$(resolve) && [ -n "$device" ]; do
    [ "$waited" -ge "$limit" ] && fail "gave up waiting for root device $root after ${wait_limit}s"
    if [ "$waited" -eq 0 ] || [ "$delay" -ge 1000000 ]; then
        say "waiting for root device $root ($((waited / 1000)) ms so far, at most ${wait_limit}s)"
    fi
    $bb usleep "$delay"
    waited=$((waited + delay))
    delay=$((delay * 2))
    [ "$delay" -gt 1000000 ] && delay=1000000
done

options=$mode${flags:+,$flags}
if [ -n "$fstype" ]; then
    $bb mount -t "$fstype" -o "$options" "$device" /newroot || fail "cannot mount $device ($root)"
else
    $bb mount -o "$options" "$device" /newroot || fail "cannot mount $device ($root)"
fi
say "mounted $device ($root) on / $mode"

if [ -z "$init" ]; then
    for candidate in /init /sbin/init; do
        if [ -x "/newroot$candidate" ] || [ -L "/newroot$candidate" ]; then
            init=$candidate
            break
        fi
    done
    [ -n "$init" ] || fail "the root on $device has no /init or /sbin/init"
fi

# The root's /init mounts its own; leave nothing of ours behind on the new root.
$bb umount /dev 2>/dev/null || $bb umount -l /dev
$bb umount /sys
$bb umount /proc
exec $bb switch_root /newroot "$init" "$@"
