# STAND-IN for OE-core's nativesdk.bbclass: empty. The layer inherits it (directly
# or through BBCLASSEXTEND); what it does in OE-core is not under test here.
