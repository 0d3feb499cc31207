-- A TLS trunk's client side as JSON: server_name (SNI and the name its
-- certificate must carry), ca_file (roots instead of the system's),
-- client_cert_file and client_key_file (mutual TLS). NULL: the defaults.
ALTER TABLE trunks ADD COLUMN tls TEXT;
