int sc_crl_placeholder_(void); int sc_crl_placeholder_(void) { return 0; }
