#!@SHELL@
# supermin /init for the initrd format (DESIGN.md §7): the kernel runs it first.
# It mounts the kernel filesystems that package scripts and the appliance's own
# init expect, runs the first-boot step, then hands over to that init.
#
# POSIX sh only. supermin writes the shebang and the two settings below at build
# time: the appliance's shell (it may have no /bin/sh) and the --init program.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
shell=@SHELL@
init=@INIT@
runner=/usr/lib/supermin/firstboot/run

say() { printf 'supermin-init: %s\n' "$*"; }

if command -v mount >/dev/null 2>&1; then
    mount=mount
elif command -v busybox >/dev/null 2>&1; then
    mount="busybox mount"
else
    mount=
    say "no mount command (util-linux or busybox): /proc, /sys and /dev stay unmounted"
fi

mount_fs() { # TYPE DIRECTORY OPTIONS
    [ -n "$mount" ] && [ -d "$2" ] || return 0
    $mount -t "$1" -o "$3" "$1" "$2" || say "cannot mount $1 on $2"
}

mount_fs proc /proc nosuid,nodev,noexec
mount_fs sysfs /sys nosuid,nodev,noexec
mount_fs devtmpfs /dev mode=0755,nosuid
for sub in pts shm; do
    [ -d /dev/$sub ] || mkdir /dev/$sub 2>/dev/null
done
mount_fs devpts /dev/pts gid=5,mode=0620,ptmxmode=0666
mount_fs tmpfs /dev/shm mode=1777,nosuid,nodev
mount_fs tmpfs /run mode=0755,nosuid,nodev

if [ -r "$runner" ]; then
    # shellcheck disable=SC2086 # "$shell" may be "/bin/busybox sh"
    $shell "$runner" || say "package scripts failed at first boot: see /var/log/supermin-firstboot.log"
fi

if [ -z "$init" ]; then
    if [ -x /sbin/init ]; then init=/sbin/init; else init=$shell; fi
elif [ ! -x "$init" ]; then
    say "$init is not an executable program: starting $shell instead"
    init=$shell
fi
if [ "$init" = "$shell" ]; then
    # shellcheck disable=SC2086
    exec $shell
fi
exec "$init" "$@"
