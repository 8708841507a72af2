# Sourced by the guest's userland runners (guest/igt, guest/vulkaninfo, guest/vkmark): mount
# the userland the launcher shares read-only with virtio-9p at $U, with what its programs
# need inside (devtmpfs, proc, sysfs, debugfs, a writable /tmp), ready for `chroot $U PROGRAM`.
U=/userland

userland_mount() { # userland_mount TAG
    mkdir -p $U
    if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro "$1" $U; then
        echo "@qp status error=userland (virtio-9p share $1 did not mount)"
        return 1
    fi
    mount -t devtmpfs devtmpfs $U/dev && mount -t proc proc $U/proc &&
        mount -t sysfs sysfs $U/sys && mount -t tmpfs tmpfs $U/tmp ||
        { echo "@qp status error=userland-mounts"; return 1; }
    mount -t debugfs debugfs $U/sys/kernel/debug 2>/dev/null
    return 0
}
