"""The stream container: magic, version, header fields, varints, image tables, CRCs. Free of torch and of the codecs."""
