# ocimux-multiarch.bbclass: a multi-arch OCI image layout from the images
# each multiconfig built, without copying a layer.
#
# A drop-in for meta-virtualization's oci-multiarch.bbclass: the same
# variables and flags, the same output path; switching is changing the
# inherit line. In a recipe (myapp-container-multiarch.bb):
#
#   inherit ocimux-multiarch
#   OCI_MULTIARCH_RECIPE = "myapp-container"
#   OCI_MULTIARCH_PLATFORMS = "aarch64 x86_64"
#   # optional: OCI_MULTIARCH_MC[aarch64] = "vruntime-aarch64",
#   #           OCI_MULTIARCH_MACHINE[aarch64] = "qemuarm64",
#   #           OCI_ARCH_TO_PLATFORM[arm] = "arm/v7" (a variant: arch/variant)
#
# Output: ${DEPLOY_DIR_IMAGE}/${PN}-multiarch-oci, written by `ocimux export`
# — every blob reflinked or hard-linked from the machines' images (copied
# only across filesystems, said in the log), index.json with one entry
# naming a generated image index (what `skopeo copy --all oci:DIR` needs)
# — and checked by `ocimux verify`. With OCI_IMAGE_TAR_OUTPUT true, also
# ${PN}-multiarch-oci.tar (an OCI archive: a tar holds its bytes). Nothing
# else under DEPLOY_DIR_IMAGE is written.

inherit nopackages

INHIBIT_DEFAULT_DEPS = "1"

OCI_MULTIARCH_RECIPE ?= ""
OCI_MULTIARCH_PLATFORMS ?= ""

OCI_MULTIARCH_MC[aarch64] ?= "vruntime-aarch64"
OCI_MULTIARCH_MC[x86_64] ?= "vruntime-x86-64"
OCI_MULTIARCH_MACHINE[aarch64] ?= "qemuarm64"
OCI_MULTIARCH_MACHINE[x86_64] ?= "qemux86-64"
OCI_ARCH_TO_PLATFORM[aarch64] ?= "arm64"
OCI_ARCH_TO_PLATFORM[x86_64] ?= "amd64"
OCI_ARCH_TO_PLATFORM[arm] ?= "arm/v7"

OCI_MULTIARCH_OUTPUT = "${DEPLOY_DIR_IMAGE}/${PN}-multiarch-oci"
# The ref name of index.json's one entry.
OCIMUX_MULTIARCH_TAG ?= "latest"

deltask do_fetch
deltask do_unpack
deltask do_patch
deltask do_configure
deltask do_compile
deltask do_install
deltask do_populate_lic
deltask do_populate_sysroot
deltask do_package
deltask do_package_qa
deltask do_packagedata

# Each platform's image task, in its multiconfig; a platform without a
# multiconfig is left to the task, which names the missing flag.
python __anonymous() {
    recipe = d.getVar('OCI_MULTIARCH_RECIPE')
    mcdepends = []
    for platform in (d.getVar('OCI_MULTIARCH_PLATFORMS') or '').split():
        mc = d.getVarFlag('OCI_MULTIARCH_MC', platform)
        if recipe and mc:
            mcdepends.append(f"mc::{mc}:{recipe}:do_image_oci")
    d.setVarFlag('do_create_multiarch_index', 'mcdepends', ' '.join(mcdepends))
}

def ocimux_multiarch_sources(d):
    """[PLATFORM=PATH, ...] for each platform, or bb.fatal naming the
    variable that is wrong or the paths looked in."""
    import os
    import re
    recipe = d.getVar('OCI_MULTIARCH_RECIPE')
    if not recipe:
        bb.fatal("OCI_MULTIARCH_RECIPE is not set: name the image recipe whose per-machine images are merged")
    platforms = (d.getVar('OCI_MULTIARCH_PLATFORMS') or '').split()
    if not platforms:
        bb.fatal("OCI_MULTIARCH_PLATFORMS is not set (e.g. 'aarch64 x86_64')")
    topdir = d.getVar('TOPDIR')
    sources = []
    for p in platforms:
        mc = d.getVarFlag('OCI_MULTIARCH_MC', p)
        machine = d.getVarFlag('OCI_MULTIARCH_MACHINE', p)
        if not mc:
            bb.fatal(f"OCI_MULTIARCH_MC[{p}] is not set: the multiconfig that builds {recipe} for {p}")
        if not machine:
            bb.fatal(f"OCI_MULTIARCH_MACHINE[{p}] is not set: the MACHINE of multiconfig {mc}")
        plat = d.getVarFlag('OCI_ARCH_TO_PLATFORM', p) or p
        if not re.fullmatch(r'[a-z0-9_]+(/[a-z0-9_.]+){0,2}', plat):
            bb.fatal(f"OCI_ARCH_TO_PLATFORM[{p}] = {plat!r}: not a platform (ARCH, ARCH/VARIANT or OS/ARCH/VARIANT)")
        if not plat.startswith('linux/') and plat.count('/') < 2:
            plat = 'linux/' + plat
        base = os.path.join(topdir, f'tmp-{mc}', 'deploy', 'images', machine)
        names = [f"{recipe}-latest-oci", f"{recipe}-{machine}-latest-oci", f"{recipe}-oci"]
        looked = [os.path.join(base, n) for n in names]
        found = [c for c in looked if os.path.isdir(c) and os.path.isfile(os.path.join(c, 'index.json'))]
        if not found:
            bb.fatal(f"OCI image not found for {p} ({mc}:{recipe}); looked in: {', '.join(looked)}")
        bb.plain(f"  {plat}: {found[0]}")
        sources.append(f"{plat}={found[0]}")
    return sources

def ocimux_multiarch_run(d, args, what):
    """Runs ocimux with args (a list: nothing is read by a shell); its
    stdout, or bb.fatal with its one-line error."""
    import subprocess
    ocimux = bb.utils.which(d.getVar('PATH'), 'ocimux')
    if not ocimux:
        bb.fatal("ocimux is not on PATH: ocimux-native provides it (do_create_multiarch_index depends on it)")
    done = subprocess.run([ocimux, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        bb.fatal(f"{what} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout

def ocimux_multiarch_replace(tmp, out):
    """Puts tmp where out is (out only: the class's own output)."""
    import os
    old = out + '.ocimux-old'
    bb.utils.remove(old, recurse=True)
    if os.path.lexists(out):
        os.rename(out, old)
    os.rename(tmp, out)
    bb.utils.remove(old, recurse=True)

python do_create_multiarch_index() {
    import os
    import re
    recipe = d.getVar('OCI_MULTIARCH_RECIPE')
    out = d.getVar('OCI_MULTIARCH_OUTPUT')
    tag = d.getVar('OCIMUX_MULTIARCH_TAG')
    bb.plain(f"Creating a multi-arch OCI image layout of {recipe} with ocimux")
    sources = ocimux_multiarch_sources(d)
    tmp = out + '.ocimux-tmp'
    bb.utils.mkdirhier(os.path.dirname(out))
    bb.utils.remove(tmp, recurse=True)
    summary = ocimux_multiarch_run(d, ['export', '--tag', tag, tmp, *sources], 'ocimux export').strip()
    bb.plain(f"  {summary}")
    copied = re.search(r'\((\d+) bytes copied\)', summary)
    if copied and int(copied.group(1)) > 0:
        bb.warn(f"{copied.group(1)} bytes copied into {out}: the images are on another filesystem "
                "(links need one filesystem; reflinks one that has them)")
    ocimux_multiarch_run(d, ['-q', 'verify', tmp], 'ocimux verify')
    ocimux_multiarch_replace(tmp, out)
    if bb.utils.to_boolean(d.getVar('OCI_IMAGE_TAR_OUTPUT')):
        tar_tmp = out + '.tar.ocimux-tmp'
        bb.utils.remove(tar_tmp)
        args = ['export', '--format', 'oci-archive', '--tag', tag, tar_tmp, *sources]
        bb.plain("  " + ocimux_multiarch_run(d, args, 'ocimux export --format oci-archive').strip())
        ocimux_multiarch_replace(tar_tmp, out + '.tar')
    bb.plain(f"Multi-arch OCI image layout: {out}")
}
addtask do_create_multiarch_index before do_build
do_create_multiarch_index[depends] += "ocimux-native:do_populate_sysroot"
do_create_multiarch_index[stamp-extra-info] = "${OCI_MULTIARCH_PLATFORMS}"

python do_deploy() {
    import os
    out = d.getVar('OCI_MULTIARCH_OUTPUT')
    if not os.path.isfile(os.path.join(out, 'index.json')):
        bb.fatal(f"multi-arch OCI image layout not found: {out}")
    bb.plain(f"Multi-arch OCI image layout available at: {out}")
}
addtask do_deploy after do_create_multiarch_index before do_build

EXCLUDE_FROM_WORLD = "1"
