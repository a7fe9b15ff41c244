-- The mail outbox keeps what was sent: addresses, and bodies that may name a
-- child (a breach notice) or carry a link. The retention job empties the body
-- of a message 30 days after it was sent (or given up), and closing an account
-- erases its address and bodies there; the rows stay (when, which template,
-- to whom until then) as the record that a notice went out.
GRANT UPDATE (body_text, to_address) ON mail_outbox TO guichet_app;
