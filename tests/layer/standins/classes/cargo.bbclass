# STAND-IN for OE-core's cargo.bbclass: the variables and tasks the ocimux
# recipe relies on, without building anything (no Rust toolchain recipes
# here). A real build runs OE-core's class: see the layer's README.
CARGO_BUILD_FLAGS ?= "--release"
CARGO_STANDIN = "1"
do_compile() {
	echo "stand-in: cargo build ${CARGO_BUILD_FLAGS}"
}
addtask compile
do_install() {
	:
}
addtask install after do_compile
