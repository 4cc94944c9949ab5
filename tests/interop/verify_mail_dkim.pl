#!/usr/bin/perl
# Verify the DKIM signatures of the message on standard input with Perl's Mail::DKIM,
# asking the DNS server at 127.0.0.1:PORT. Prints "ALGORITHM RESULT" per signature.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my $port = shift @ARGV or die "usage: verify_mail_dkim.pl PORT < message\n";
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port));
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
foreach my $signature ($dkim->signatures) {
    print $signature->algorithm, " ", $signature->result, "\n";
}
