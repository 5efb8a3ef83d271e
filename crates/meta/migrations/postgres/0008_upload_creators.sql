-- Who started an upload (the principal of the token that opened it, as
-- `kind:user:credential`), so that principal alone may finish it after that token
-- expired, while it still may push there.
ALTER TABLE uploads ADD COLUMN created_by TEXT;
