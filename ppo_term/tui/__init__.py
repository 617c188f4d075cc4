"""The Textual dashboard: consumes engine events, sends controls. Never imported by the engine."""
