"""The device and its regions: DEVICE_GET_INFO, DEVICE_GET_REGION_INFO, REGION_READ/WRITE
(general path), REGION_WRITE_MULTI and DEVICE_RESET.

Regions are the VFIO PCI ones: BAR0-5, ROM, CONFIG, VGA. Config space is served from
``PciFunction.config``; BAR sparse-mmap areas from the BAR's shared memory; everything else in
a BAR goes to ``bar_read``/``bar_write`` in 1/2/4/8-byte pieces. The 1/2/4/8-byte BAR accesses
without sparse areas never get here: the connection answers them on its fast path.
"""

from __future__ import annotations

import errno
import logging

from . import protocol as P
from .errors import ProtocolError
from .pci import PciFunction
from .stats import ServerStats

tlog = logging.getLogger("qemu_panthor.vfio_user.trace")

MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
_RW = P.RW
# A trapped (callback-served) BAR access that is not one 1/2/4/8-byte register access is
# split into naturally aligned pieces of up to 4 bytes, one device callback each. QEMU never
# sends more than 8 bytes to a trapped BAR; bigger ones are refused (EINVAL, as libvfio-user
# refuses bad region accesses) so that one message cannot hold the loop for long.
MAX_TRAPPED_ACCESS = 4096
# REGION_WRITE_MULTI entries per message (QEMU sends at most 200).
MAX_WRITE_MULTI = 1024
_WR_ONE = P.WRITE_MULTI_ENTRY


class RegionCommands:
    """Region and device-level handlers over one :class:`PciFunction`."""

    def __init__(
        self, device: PciFunction, stats: ServerStats, *, max_data_xfer_size: int,
        trace: bool = False,
    ) -> None:
        self.dev = device
        self.stats = stats
        self.max_data_xfer_size = max_data_xfer_size
        self.trace = trace
        #: fds the client takes in one message (VERSION max_msg_fds): with none, BARs are
        #: offered without their mmap areas (a sparse area is useless without its fd)
        self.client_max_fds = 1

    # -- info ------------------------------------------------------------------------------
    def device_get_info(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "DEVICE_GET_INFO carries no fds")
        if len(payload) < 4:
            raise ProtocolError(errno.EINVAL, "short DEVICE_GET_INFO")
        argsz = int.from_bytes(payload[:4], "little")
        if argsz < P.DeviceInfo.sizeof():
            raise ProtocolError(errno.EINVAL, f"DEVICE_GET_INFO argsz {argsz} too small")
        info: bytes = P.DeviceInfo.build(
            {
                "argsz": P.DeviceInfo.sizeof(),
                "flags": P.DeviceFlags.RESET | P.DeviceFlags.PCI,
                "num_regions": P.NUM_PCI_REGIONS,
                "num_irqs": P.NUM_PCI_IRQS,
            }
        )
        return info

    def get_region_info(self, payload: bytes, fds: list[int]) -> bytes | tuple[bytes, list[int]]:
        if fds:
            raise ProtocolError(errno.EINVAL, "GET_REGION_INFO carries no fds")
        fixed = P.RegionInfo.sizeof()
        if len(payload) < 12:
            raise ProtocolError(errno.EINVAL, "short GET_REGION_INFO")
        payload = payload.ljust(fixed, b"\0")
        q = P.RegionInfo.parse(payload)
        if q.argsz < fixed:
            raise ProtocolError(errno.EINVAL, f"GET_REGION_INFO argsz {q.argsz} too small")
        if q.index >= P.NUM_PCI_REGIONS:
            raise ProtocolError(errno.EINVAL, f"no region {q.index}")
        R = P.RegionFlags
        flags, size, caps, out_fds = 0, 0, b"", []
        if q.index == P.PciRegion.CONFIG:
            flags, size = R.READ | R.WRITE, self.dev.config_size
        elif q.index < 6 and q.index in self.dev.bars:
            spec = self.dev.bars[q.index]
            flags, size = R.READ | R.WRITE, spec.size
            if spec.mmap_areas and self.client_max_fds >= 1:
                flags |= R.MMAP
                caps = P.SparseMmapCap.build(
                    {
                        "header": {
                            "id": P.REGION_INFO_CAP_SPARSE_MMAP,
                            "version": P.REGION_INFO_CAP_SPARSE_MMAP_VERSION,
                            "next": 0,
                        },
                        "nr_areas": len(spec.mmap_areas),
                        "reserved": 0,
                        "areas": [{"offset": o, "size": n} for o, n in spec.mmap_areas],
                    }
                )
                fd = self.dev.bar_memfd(q.index)
                if fd is not None:
                    out_fds = [fd]
        needed = fixed + len(caps)
        if caps and q.argsz < needed:
            # vfio argsz negotiation: say how much is needed, send no caps (and no fd).
            short: bytes = P.RegionInfo.build(
                {"argsz": needed, "flags": flags, "index": q.index, "cap_offset": 0,
                 "size": size, "offset": 0}
            )
            return short
        if caps:
            flags |= R.CAPS
        info: bytes = P.RegionInfo.build(
            {"argsz": needed, "flags": flags, "index": q.index,
             "cap_offset": fixed if caps else 0, "size": size, "offset": 0}
        )
        return info + caps, out_fds

    # -- access (general path) -------------------------------------------------------------
    def _region_size(self, region: int) -> int:
        if region == P.PciRegion.CONFIG:
            return self.dev.config_size
        if region < 6:
            spec = self.dev.bars.get(region)
            return spec.size if spec else 0
        if region < P.NUM_PCI_REGIONS:
            return 0
        raise ProtocolError(errno.EINVAL, f"no region {region}")

    def _check_access(self, off: int, region: int, count: int) -> None:
        size = self._region_size(region)
        if count == 0 or count > self.max_data_xfer_size:
            raise ProtocolError(errno.EINVAL, f"bad access count {count}")
        if off + count > size:
            raise ProtocolError(
                errno.EINVAL, f"access {off:#x}+{count} beyond region {region} ({size:#x})"
            )

    def _check_trapped(self, off: int, region: int, count: int) -> None:
        if count > MAX_TRAPPED_ACCESS:
            raise ProtocolError(
                errno.EINVAL, f"trapped access {off:#x}+{count} to region {region} is over "
                f"{MAX_TRAPPED_ACCESS} bytes"
            )

    def _sparse(self, region: int, off: int, count: int) -> memoryview | None:
        spec = self.dev.bars.get(region) if region < 6 else None
        if spec is None:
            return None
        for a_off, a_size in spec.mmap_areas:
            if a_off <= off and off + count <= a_off + a_size:
                return self.dev.bar_memory(region)[off : off + count]
        return None

    @staticmethod
    def _pieces(off: int, count: int) -> list[tuple[int, int]]:
        """[off, off+count) as naturally aligned 4/2/1-byte register accesses."""
        out = []
        end = off + count
        while off < end:
            n = 4
            while off % n or off + n > end:
                n >>= 1
            out.append((off, n))
            off += n
        return out

    def read_region(self, off: int, region: int, count: int) -> bytes:
        self._check_access(off, region, count)
        if region == P.PciRegion.CONFIG:
            data = self.dev.config_read(off, count)
        elif (mem := self._sparse(region, off, count)) is not None:
            data = bytes(mem)
        elif count in MASK:
            data = (self.dev.bar_read(region, off, count) & MASK[count]).to_bytes(
                count, "little")
        else:
            self._check_trapped(off, region, count)
            data = b"".join(
                (self.dev.bar_read(region, o, n) & MASK[n]).to_bytes(n, "little")
                for o, n in self._pieces(off, count)
            )
        if self.trace:
            tlog.debug("read  region %d+%#x/%d -> %s", region, off, count, data.hex())
        return data

    def write_region(self, off: int, region: int, data: bytes) -> None:
        count = len(data)
        self._check_access(off, region, count)
        if self.trace:
            tlog.debug("write region %d+%#x/%d <- %s", region, off, count, data.hex())
        if region == P.PciRegion.CONFIG:
            self.dev.config_write(off, data)
        elif (mem := self._sparse(region, off, count)) is not None:
            mem[:] = data
        elif count in MASK:
            self.dev.bar_write(region, off, count, int.from_bytes(data, "little"))
        else:
            self._check_trapped(off, region, count)
            for o, n in self._pieces(off, count):
                self.dev.bar_write(region, o, n, int.from_bytes(data[o - off : o - off + n],
                                                               "little"))

    def region_read(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_READ carries no fds")
        if len(payload) != P.REGION_ACCESS_FIXED:
            raise ProtocolError(errno.EINVAL, "REGION_READ payload must be 16 bytes")
        off, region, count = _RW.unpack_from(payload)
        return payload + self.read_region(off, region, count)

    def region_write(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE carries no fds")
        if len(payload) < P.REGION_ACCESS_FIXED:
            raise ProtocolError(errno.EINVAL, "short REGION_WRITE")
        off, region, count = _RW.unpack_from(payload)
        if len(payload) != P.REGION_ACCESS_FIXED + count:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE count does not match its data")
        self.write_region(off, region, payload[16:])
        return payload[:16]

    def region_write_multi(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE_MULTI carries no fds")
        if len(payload) < 8:
            raise ProtocolError(errno.EINVAL, "short REGION_WRITE_MULTI")
        wr_cnt = P.U64.unpack_from(payload)[0]
        if wr_cnt == 0 or 8 + wr_cnt * P.WRITE_MULTI_ENTRY_SIZE != len(payload):
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI size/wr_cnt {wr_cnt} mismatch")
        if wr_cnt > MAX_WRITE_MULTI:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI of {wr_cnt} > "
                                f"{MAX_WRITE_MULTI} writes")
        wrs = list(_WR_ONE.iter_unpack(memoryview(payload)[8:]))
        for offset, region, count, _data in wrs:  # validate all before doing any
            if not 1 <= count <= 8:  # the spec: "writes of 8 bytes or less" (3, 5... too)
                raise ProtocolError(errno.EINVAL, f"write-multi count {count} not 1..8")
            self._check_access(offset, region, count)
        for offset, region, count, data in wrs:
            self.write_region(offset, region, data[:count])
        return payload[:8]

    # -- reset -----------------------------------------------------------------------------
    def device_reset(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "DEVICE_RESET carries no fds")
        self.stats.resets += 1
        self.dev.reset_config()
        self.dev.reset()
        return b""
