-- 002-rule-switch: rules can be switched off without being deleted.
ALTER TABLE rules ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
