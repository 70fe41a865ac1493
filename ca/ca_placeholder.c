int sc_ca_placeholder_(void); int sc_ca_placeholder_(void) { return 0; }
