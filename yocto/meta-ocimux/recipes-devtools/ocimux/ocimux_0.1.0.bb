SUMMARY = "Serve per-architecture OCI image layouts as one multi-arch layout, without copying blobs"
DESCRIPTION = "ocimux presents the images each machine built as one multi-arch OCI image \
layout (a FUSE mount, an export of links, or a read-only registry), passing every blob \
through from its source."
HOMEPAGE = "https://github.com/ocimux/ocimux"
SECTION = "devel"
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=6;endline=6;md5=86b31c7756a1a7962f28b62856ed4f05"

# Built from the checkout this layer is part of (it sits in yocto/meta-ocimux/
# of the ocimux repository). To build another checkout, set OCIMUX_SRCDIR; to
# fetch instead, remove externalsrc in a bbappend and set SRC_URI and SRCREV.
OCIMUX_SRCDIR ?= "${@os.path.abspath(os.path.join(d.getVar('FILE_DIRNAME'), '..', '..', '..', '..'))}"
EXTERNALSRC = "${OCIMUX_SRCDIR}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"

inherit externalsrc cargo

require ${BPN}-crates.inc

# The library's test helpers and fuzz entries are not built.
CARGO_BUILD_FLAGS += "--bin ocimux"

# mount by users other than root goes through fusermount3.
RDEPENDS:${PN}:class-target += "fuse3-utils"

BBCLASSEXTEND = "native nativesdk"
