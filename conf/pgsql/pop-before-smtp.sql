-- pbsyslog: the table the "pgsql" output writes and Postfix's pgsql: map reads.
--
--   createdb pbsyslog && psql -d pbsyslog -f conf/pgsql/pop-before-smtp.sql
--
-- One row per client IP.  Every pbsyslog instance of a fleet upserts into
-- it (ON CONFLICT (ip): expires_at only ever moves forward, so the latest
-- login anywhere wins); Postfix asks
--   SELECT 'OK' FROM pop_before_smtp WHERE ip = '%s' AND expires_at > now()
-- so expiry is enforced by the query: a dead pbsyslog leaves no stale permit.
--
-- ip is text, not inet, on purpose: check_client_access also looks up the
-- client's host name and parent domains; against an inet column those keys
-- would make the query fail ("invalid input syntax for type inet") and
-- smtpd answer 451 to every client.  pbsyslog writes IPv4 dotted quads and
-- IPv6 in Postfix's lowercase compressed form, which is what smtpd looks up.

CREATE TABLE IF NOT EXISTS pop_before_smtp (
    ip          text        PRIMARY KEY,   -- the lookup's index
    expires_at  timestamptz NOT NULL,
    pattern     text        NOT NULL DEFAULT '',
    source_host text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The periodic cleanup (DELETE ... WHERE expires_at < now() - interval)
-- finds the long-expired rows by this index instead of scanning the table.
CREATE INDEX IF NOT EXISTS pop_before_smtp_expires_at ON pop_before_smtp (expires_at);

-- Postfix connects as a role that may only read; pbsyslog as one that may
-- write.  Create the roles to suit your site, e.g.:
--   CREATE ROLE postfix LOGIN PASSWORD '...';
--   CREATE ROLE pbsyslog LOGIN PASSWORD '...';
--   GRANT SELECT ON pop_before_smtp TO postfix;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON pop_before_smtp TO pbsyslog;
