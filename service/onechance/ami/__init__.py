"""Everything AMI: byte framing and parsing (``parser``) and, for the daemon, the live link."""

from .parser import AmiFramer, AmiMessage

__all__ = ["AmiFramer", "AmiMessage"]
