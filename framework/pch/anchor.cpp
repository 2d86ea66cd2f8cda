// Anchor translation unit for the shared precompiled header (see kiln_pch.h).
