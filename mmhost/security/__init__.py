"""Who is calling and what they may do: SigV4 and API-key authentication, IAM policies per
target model, per-principal limits, and the audit log. ``Guard`` is the one entry point."""

from mmhost.security.guard import Guard

__all__ = ["Guard"]
