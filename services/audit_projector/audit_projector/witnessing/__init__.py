"""Witnessed checkpoints: each new checkpoint is sent to the configured witnesses (C2SP tlog-witness) with a
consistency proof from the size each last cosigned; their cosignatures are verified, stored beside the checkpoint
and published with it; refusals that point at a rollback or a split view are kept as evidence."""
