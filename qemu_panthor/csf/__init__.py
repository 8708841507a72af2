"""The CSF firmware side of the GPU: what the Mali MCU runs, modelled in Python.

* :mod:`.fwimage`   - the ``mali_csffw.bin`` container: our image builder, the driver's parser
  checks, ``qemu-panthor fw-info``;
* :mod:`.iface`     - GLB/CSG/CS control/input/output blocks, REQ/ACK bits, shared-section layout;
* :mod:`.mcu`       - :class:`~.mcu.CsfFirmware`, the MCU model (a ``gpu.McuHooks``);
* :mod:`.scheduler` - which command stream runs next, in bounded slices on the event loop;
* :mod:`.interp`    - the command-stream interpreter.

See docs/firmware.md.
"""
