# STAND-IN for OE-core's externalsrc.bbclass: records that the recipe builds
# from EXTERNALSRC; OE-core's class (its fetch and stamp handling) is not
# under test here.
EXTERNALSRC_STANDIN = "1"
