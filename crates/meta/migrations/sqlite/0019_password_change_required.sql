-- A password someone else chose (an administrator, or generated): the user is asked
-- to set their own at their next sign-in, as GitLab does.
ALTER TABLE users ADD COLUMN password_change_required INTEGER NOT NULL DEFAULT 0;
