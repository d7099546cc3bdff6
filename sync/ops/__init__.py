"""Operations: what operators read and tune (selectors, stats, alerts, retention, config). See docs/architecture.md."""
