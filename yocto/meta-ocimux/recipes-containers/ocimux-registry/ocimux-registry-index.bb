SUMMARY = "ocimux-registry.sh: container-registry.sh's verbs, serving the build's images live with ocimux"
DESCRIPTION = "Writes ${OCIMUX_REGISTRY_DIR}/ocimux-registry.sh (start, stop, status, list, \
catalog, tags, push, import) with this build's settings: \
bitbake ocimux-registry-index -c generate_registry_script"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit nopackages

INHIBIT_DEFAULT_DEPS = "1"

# container-registry.sh's settings, with its defaults.
CONTAINER_REGISTRY_URL ?= "localhost:5000"
CONTAINER_REGISTRY_NAMESPACE ?= "yocto"
CONTAINER_REGISTRY_INSECURE ?= "1"
CONTAINER_REGISTRY_TAG_STRATEGY ?= "timestamp latest"
# Where the script, its ocimux, the server's pid and log files and imported
# images live.
OCIMUX_REGISTRY_DIR ?= "${TOPDIR}/ocimux-registry"

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

def ocimux_registry_quote(value):
    """value as one shell word inside the generated script."""
    import shlex
    return shlex.quote(value or '')

python do_generate_registry_script() {
    import os
    import re
    import shutil
    state = d.getVar('OCIMUX_REGISTRY_DIR')
    url = d.getVar('CONTAINER_REGISTRY_URL')
    namespace = d.getVar('CONTAINER_REGISTRY_NAMESPACE')
    if not re.fullmatch(r'[A-Za-z0-9.-]*:[0-9]+|\[[0-9a-fA-F:.]+\]:[0-9]+', url or ''):
        bb.fatal(f"CONTAINER_REGISTRY_URL = {url!r}: not HOST:PORT (e.g. localhost:5000)")
    if not re.fullmatch(r'[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*', namespace or ''):
        bb.fatal(f"CONTAINER_REGISTRY_NAMESPACE = {namespace!r}: not a repository namespace (e.g. yocto)")
    found = bb.utils.which(d.getVar('PATH'), 'ocimux')
    if not found:
        bb.fatal("ocimux is not on PATH: ocimux-native provides it (this task depends on it)")
    # The native sysroot is this recipe's work directory (rm_work removes
    # it): the script keeps its own ocimux beside it.
    bindir = os.path.join(state, 'bin')
    bb.utils.mkdirhier(bindir)
    ocimux = os.path.join(bindir, 'ocimux')
    tmp = ocimux + '.tmp'
    bb.utils.remove(tmp)
    try:
        os.link(found, tmp)
    except OSError:
        shutil.copy2(found, tmp)
    os.replace(tmp, ocimux)
    template = os.path.join(d.getVar('FILE_DIRNAME'), 'files', 'ocimux-registry.sh.in')
    with open(template) as f:
        text = f.read()
    values = {
        'TOPDIR': d.getVar('TOPDIR'),
        'STATE': state,
        'OCIMUX': ocimux,
        'URL': url,
        'NAMESPACE': namespace,
        'INSECURE': d.getVar('CONTAINER_REGISTRY_INSECURE'),
        'STRATEGY': d.getVar('CONTAINER_REGISTRY_TAG_STRATEGY'),
    }
    for key, value in values.items():
        text = text.replace(f'@{key}@', ocimux_registry_quote(value))
    script = os.path.join(state, 'ocimux-registry.sh')
    with open(script + '.tmp', 'w') as f:
        f.write(text)
    os.chmod(script + '.tmp', 0o755)
    os.replace(script + '.tmp', script)
    bb.plain(f"Registry helper: {script} (start, stop, status, list, catalog, tags, push, import)")
}
addtask do_generate_registry_script
do_generate_registry_script[depends] += "ocimux-native:do_populate_sysroot"
do_generate_registry_script[nostamp] = "1"

EXCLUDE_FROM_WORLD = "1"
