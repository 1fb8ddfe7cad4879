# Under micropython: run main.py with the firmware from a ROMFS image mounted at /rom, as on a
# board with a ROMFS partition. argv: IMAGE MAIN [main's arguments]. The image is read into one
# buffer, the first allocation (the bottom of the heap, never freed); its exact heap cost is
# printed first ("romfs image heap: N bytes") so that measurements can leave it out: on a board
# the image is in flash.
import gc
import os
import sys

import vfs

image_path, main = sys.argv[1], sys.argv[2]
gc.collect()
before = gc.mem_alloc()
image = bytearray(os.stat(image_path)[6])
with open(image_path, "rb") as f:
    f.readinto(image)
print(f"romfs image heap: {gc.mem_alloc() - before} bytes")
vfs.mount(vfs.VfsRom(image), "/rom")
sys.argv[:] = sys.argv[2:]
with open(main) as f:
    source = f.read()
exec(source, {"__name__": "__main__"})
